"""The identity mirror read model: partners, tenants, users, groups, memberships and sync runs."""
