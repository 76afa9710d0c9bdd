"""flk.sim"""
