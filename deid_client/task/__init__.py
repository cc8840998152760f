"""The federated task beside ``deid_client.client_app``: a node's data and the segmentation model."""
