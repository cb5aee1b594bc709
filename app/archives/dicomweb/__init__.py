"""app/archives/dicomweb"""
