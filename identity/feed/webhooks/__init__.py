"""Webhooks: the deliverer (`flask --app identity deliver`, identity/commands.py) POSTs
the change feed to a subscriber.

config.py reads the settings, deliverer.py runs the loop, signing.py signs each batch,
transport.py sends it. The deliverer is its own process, beside the web server; its
figures reach /metrics through the subscriber's row in the database.
"""
