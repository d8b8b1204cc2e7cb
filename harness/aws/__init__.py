"""AWS side of the runbook: the console steps performed through AWS's APIs (boto3), against a moto server in
the lab ("simulated" in the report) or a real account (read-only unless --allow-mutation)."""
