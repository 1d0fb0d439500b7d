"""Simulated OpenAI-compatible LLM provider for tests, demos and benchmarks."""

from fakellm.behaviour import SimConfig
from fakellm.cli import main, serve
from fakellm.server import build_app

__all__ = ["SimConfig", "build_app", "main", "serve"]
