"""The networks a run trains: three LIF layers with dense or G2G-sparse weights."""
