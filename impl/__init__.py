"""flk.impl"""
