import os

# TensorFlow's start-up chatter is silenced only at level 3.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
