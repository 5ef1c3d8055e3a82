"""Greetings in many scripts. 你好 👋"""

GREETINGS = {"zh": "你好", "ja": "こんにちは", "emoji": "👋🌍"}


def greet(name: str) -> str:
    """Say hello to ``name`` 😀."""
    return "Hello, " + name + "!"


def add(a: int, b: int) -> int:
    """Return the sum of a and b."""
    return a + b
