"""meshgate test harness: a kmock KubernetesEmulator on 127.0.0.1.

Usage: kmock_runner.py [PORT]   (0 or absent: a free port). Prints the port on stdout, then
serves until killed. Started by tests/support/kmock.rs; every object fed to it must carry
metadata.resourceVersion (kmock assigns none, and kube-runtime's watcher needs one). Besides kmock's own emulated
Kubernetes API, two control endpoints exist for what the API cannot express:
  POST /_meshgate/silent  {"resource": "group/version/plural", "namespace", "name", "object"}
      store an object without emitting a watch event (only a relist can reveal it)
  POST /_meshgate/gone
      send a 410 Gone ERROR event on every open cluster-wide watch stream
  GET  /_meshgate/lists   -> {"lists": N}: LIST requests served so far
"""
import asyncio
import sys

import kmock

RESOURCES = {
    "networking.istio.io/v1/gateways": "Gateway",
    "networking.istio.io/v1/virtualservices": "VirtualService",
    "networking.istio.io/v1/destinationrules": "DestinationRule",
    "networking.istio.io/v1/serviceentries": "ServiceEntry",
    "networking.istio.io/v1/workloadentries": "WorkloadEntry",
    "v1/services": "Service",
    "v1/pods": "Pod",
    "v1/secrets": "Secret",
    "discovery.k8s.io/v1/endpointslices": "EndpointSlice",
}

GONE = {
    "type": "ERROR",
    "object": {
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": "too old resource version", "reason": "Expired", "code": 410,
    },
}


async def main() -> None:
    emu = kmock.KubernetesEmulator()
    for key, kind in RESOURCES.items():
        emu.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=True, verbs=["list", "watch", "get", "create", "patch", "delete"])

    def silent(req):
        d = req.data
        emu.objects[d["resource"], d["namespace"], d["name"]] = d["object"]
        return {"ok": True}

    async def gone(req):
        # kmock has no public way to emit an ERROR event; its per-resource buses are private.
        for bus in list(emu._buses.values()):
            await bus.put(GONE)
        return {"ok": True}

    def lists(req):
        return {"lists": len(emu[kmock.action.LIST])}

    emu["post /_meshgate/silent"] << silent
    emu["post /_meshgate/gone"] << gone
    emu["get /_meshgate/lists"] << lists
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    async with emu, kmock.Server(emu, port=port or None) as srv:
        print(srv.port, flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
