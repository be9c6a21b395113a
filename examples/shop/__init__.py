"""A small shop schema served by the engine: MODELS=examples.shop.models:Base."""
