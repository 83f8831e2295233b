"""Devices: NumPy computes on the CPU."""

DEVICES = ("cpu",)
