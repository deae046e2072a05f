"""The agent runtime: private to Bayou. Data teams import from :mod:`agents`; nothing here is a
public API and names may change between releases.

The data path through it, for one batch of input records: :mod:`.loop` (the worker's loop:
polls the group consumer of :mod:`.kafka_clients`, applies rebalances, restores state) hands the
batch to :mod:`.batch` (one batch in order: each record to its agents, outputs, changelog and
offsets in that order, or in one transaction); :mod:`.engine` runs an app's agents on a record,
closes windows at the partition's watermark and collects the outputs (window results, alerts,
commands for devices); :mod:`.store` keeps tables in RocksDB and restores them from the
changelog; :mod:`.webhooks` calls HTTP endpoints; :mod:`.global_follower` follows other apps'
changelogs; :mod:`.replay` runs apps over past input (``bayou replay``); :mod:`.worker` is the
``bayou worker`` entry; :mod:`.config` its settings; :mod:`.metrics` its Prometheus metrics.
Commands leave for a device as records on the outbound topic (``bayou.outbound``), which every
ingress node delivers to the device's MQTT subscription.
"""
