"""The identity mirror's moving parts: the ScaiKey client and sync runs, webhook verification, mirrored roles."""
