"""flk.conformance"""
