"""The Flower ServerApp (strategy, checkpoints, metrics): arrives with the federated-training issue."""
