"""Learning a job's routing policy from its own stored runs: the per-item signals
(`signals`), the family of policies and how each one decides and costs (`policies`), the
cross-validated choice of the cheapest one that meets the accuracy target (`fit`), and the
policy file a spec references (`policy_file`)."""
