-- Each gate's own mesh identity (DESIGN §8, §11): the ed25519 public key its device generated and
-- sent at enrollment (hex). Replicated to the event's gates while the gate is active; cleared when
-- the gate is deactivated (with its credentials), replaced by the next enrollment.
ALTER TABLE gates ADD COLUMN mesh_public_key TEXT;
