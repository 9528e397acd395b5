"""Telling people: notices are built by pure functions (:mod:`~bridge.notify.notices`) and
mailed by the notifier (:mod:`~bridge.notify.sender`) through the one mail client
(:mod:`bridge.relay`)."""
