"""app/core/mapping"""
