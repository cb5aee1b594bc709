"""app/federation"""
