-- The run of a preempted job that was asked to stop and has not ended yet:
-- a restart asks it again to stop and does not launch the job beside it.
ALTER TABLE jobs ADD COLUMN stopping_handle TEXT;
