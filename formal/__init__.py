"""flk.formal"""
