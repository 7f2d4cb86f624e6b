"""Grants and revocation: carrying out an approved request at the identity provider, ending it, who owns a
membership, and reconciliation against the IdP."""
