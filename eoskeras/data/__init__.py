"""eoskeras.data"""
