"""Plumbing both parts share: devices and seeds, paths, progress bars, plotting, safe run folders,
CUDA-graph training steps and float32 error bounds."""
