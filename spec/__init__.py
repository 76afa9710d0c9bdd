"""flk.spec"""
