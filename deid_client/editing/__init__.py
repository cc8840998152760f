"""The editing engine: the FlowEdit sampler, schedules, per-image seeds and model backends.

It knows no defaults and no firewall: ``deid_client.firewall`` drives it.
"""
