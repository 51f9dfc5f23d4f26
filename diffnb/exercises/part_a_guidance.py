"""(being written)"""
EXERCISES: list = []
