"""CalcJobs: external programs run through a transport and a scheduler (AiiDA's model)."""
