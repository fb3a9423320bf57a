-- Conversation memory (issue 9): a compaction item is a message row (role `system`) whose `compaction`
-- holds what it replaced (JSON: replaced_ids, message_count, model, trigger, tokens_before); each
-- replaced message keeps its row and gets `compacted_by` = the item's id, which takes it out of the
-- context. Older binaries ignore both columns (they see the summary as a system message).
-- Additive only (see 0001 for the expand/contract rules).

ALTER TABLE messages ADD COLUMN compaction TEXT NULL;
ALTER TABLE messages ADD COLUMN compacted_by TEXT NULL;
