"""eoskeras.recipes"""
