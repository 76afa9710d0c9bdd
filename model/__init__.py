"""flk.model"""
