"""The CAs' private keys, opened once per process and kept in memory.

Like any CA server keeps its signing keys: opening one per certificate would cost a database round trip and an
unwrap for every issuance. The cache is bounded, and an entry is keyed by the CA and its data key, so it can never
stand in for a key it was not opened from; revoking a CA drops its entry (other processes stop using theirs because
every issuance checks the CA's status in its transaction).
"""

from __future__ import annotations

from collections import OrderedDict

from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.sealed_keys import CA_KEY, SealedKey, open_private_key
from scaivault.database import Queryable
from scaivault.pki.keys import PrivateKey, load_private_key


class CaKeys:
    def __init__(self, keyring: KeyRing, *, size: int = 256) -> None:
        self._keyring = keyring
        self._size = size
        self._keys: OrderedDict[tuple[str, str], PrivateKey] = OrderedDict()

    def __repr__(self) -> str:
        return f"CaKeys({len(self._keys)} open)"

    async def private_key(self, conn: Queryable, owner: str, ca_id: str, sealed: SealedKey) -> PrivateKey:
        entry = (ca_id, sealed.data_key_id)
        key = self._keys.get(entry)
        if key is None:
            pem = await open_private_key(self._keyring, conn, sealed, owner=owner, kind=CA_KEY, object_id=ca_id)
            key = load_private_key(pem)
            self._keys[entry] = key
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(entry)
        return key

    def forget(self, ca_id: str) -> None:
        for entry in [e for e in self._keys if e[0] == ca_id]:
            del self._keys[entry]
