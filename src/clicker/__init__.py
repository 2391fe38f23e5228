"""Clicker: reinforcement learning of language-model policies with dense credit."""

__version__ = "0.1.0"
