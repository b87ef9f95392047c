"""ainode protocol plug-in: L1 trabecular attenuation on CT (opportunistic osteoporosis screening).

Installed beside ainode, it is found through the entry point ``l1-trabecular-attenuation`` of the
group ``ainode.protocols`` (:mod:`ainode_l1.spec`). Research use only, not for diagnosis.
"""
