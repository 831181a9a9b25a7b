"""Objects built from the config, and the run seed's independent random streams."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "objects": ["build", "load_data", "instantiate_option", "RunObjects"],
    "random_streams": ["stream_seed", "seed_everything", "rng_state", "set_rng_state", "STREAMS"],
})
