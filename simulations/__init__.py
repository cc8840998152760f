"""Hydra entry points for multi-client simulations and sweeps: arrive with the federated-training issue."""
