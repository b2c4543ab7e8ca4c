"""Replay: consume Records, pace them on an absolute clock, send them to targets, observe."""
