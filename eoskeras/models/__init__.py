"""eoskeras.models"""
