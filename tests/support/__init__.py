"""Helpers shared by the test suite: real images, real servers, real processes."""
