"""Population impact: evaluate rule releases over a FHIR Bulk Data export, and report the difference."""
