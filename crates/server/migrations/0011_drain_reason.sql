-- Why a node was drained (shown with the node, written to the audit log).
ALTER TABLE drained_nodes ADD COLUMN reason TEXT;
