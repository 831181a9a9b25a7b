"""The networks a run trains: three LIF layers with dense or G2G-sparse weights."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "network": ["SpikingNetwork", "NetworkOutput", "MODELS"],
})
