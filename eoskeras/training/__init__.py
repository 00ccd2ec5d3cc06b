"""eoskeras.training"""
