"""Workflow rules every service shares: the step catalogue, definitions, inputs, the run fold, schedules, cron."""
