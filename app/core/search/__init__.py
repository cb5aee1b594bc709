"""app/core/search"""
