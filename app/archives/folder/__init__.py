"""app/archives/folder"""
