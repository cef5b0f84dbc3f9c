"""What both ends of the wire agree on before any method: the protocol version, the message
type tags, the bounds on a message, the notification names.

Imports nothing: overlayctl's start-up path reads these without loading msgpack or the method
table (protocol.framing and protocol.methods re-export them; they are defined only here).
"""

#: Bumped when a method is removed or changes meaning; additions keep the number.
PROTOCOL_VERSION = 1

#: msgpack-RPC's message type tags: ``[0, msgid, method, params]``, ``[1, msgid, error,
#: result]``, ``[2, method, params]``.
REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2

#: Largest encoded message, in bytes, either side accepts or sends.
MAX_FRAME = 1 << 20
#: Largest array length or map size inside a message.
MAX_ITEMS = 1 << 16
#: Deepest nesting of arrays/maps; the message envelope itself is level 1.
MAX_DEPTH = 32
#: Most arrays and maps in one message. A frame of a million empty arrays would otherwise cost
#: half a second and ~70 MB to decode; this caps that at a few ms while leaving room for a
#: status reply about thousands of services.
MAX_CONTAINERS = 1 << 16

#: The notification method ``subscribe`` leads to: ``[2, "state", [record]]``.
STATE_NOTIFICATION = "state"
