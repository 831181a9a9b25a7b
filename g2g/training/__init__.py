"""The SNN training loop: epochs, evaluation, the firing-rate regulariser and the
synaptic-operation and energy counts of one inference."""
