-- Agent definitions as tenants manage them (v2 /api/v2/agents, `weft agents`): a unique name per tenant, an
-- auth secret stored only encrypted (AES-GCM; the key id says which WEFT_SECRETS_KEYS entry seals it, so keys
-- rotate), a timeout and a prompt template. Numbered 018 to stay clear of migrations other branches add now.
ALTER TABLE agents ADD COLUMN secret_key_id text;
ALTER TABLE agents ADD COLUMN secret_ciphertext bytea;
ALTER TABLE agents ADD COLUMN timeout_s double precision NOT NULL DEFAULT 30 CHECK (timeout_s > 0 AND timeout_s <= 600);
ALTER TABLE agents ADD COLUMN prompt_template text;
ALTER TABLE agents ADD COLUMN updated_at timestamptz NOT NULL DEFAULT clock_timestamp();
ALTER TABLE agents ADD CONSTRAINT agents_secret_whole CHECK ((secret_key_id IS NULL) = (secret_ciphertext IS NULL));
CREATE UNIQUE INDEX agents_tenant_name ON agents (tenant_id, lower(name));
