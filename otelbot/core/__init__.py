"""What every instrumentor shares: patching and error containment, light spans, fast
metrics, redaction, SQL shapes, configuration, the active-users sketch."""
