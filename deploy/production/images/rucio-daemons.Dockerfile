# Rucio 41's daemons with juno-dci's policy package: Rucio's official image plus the wheel this
# repository builds. Build from the repository root (see rucio-server.Dockerfile):
#
#   docker build -f deploy/production/images/rucio-daemons.Dockerfile -t registry.example.org/juno/rucio-daemons-juno:41.5.1-juno .
#
# The daemons load the same policy package as the server (lfn2pfn for transfers and deletions) and the
# replica-recoverer reads its per-datatype policy from /opt/juno-dci/etc (rucio-daemons.values.yaml).
FROM rucio/rucio-daemons:release-41.5.1

COPY dist/ /tmp/juno-dci-dist/
# The policy package needs Rucio's own dependencies (in the image) and PyYAML; --no-deps keeps the tools'
# dependencies (Kafka, HTCondor) out of the image. tests/test_deploy_production.py imports the policy package
# with nothing but Rucio's dependency closure and the requirements named on the next line.
RUN python3 -m pip install --no-cache-dir "PyYAML>=6" \
 && python3 -m pip install --no-cache-dir --no-deps /tmp/juno-dci-dist/juno_dci-*.whl \
 && rm -rf /tmp/juno-dci-dist \
 && python3 -c "import rucio_policy.permission, rucio_policy.schema, rucio_policy.lfn2pfn"
COPY etc/replication.yaml etc/sites.yaml etc/suspicious_replica_recoverer.json /opt/juno-dci/etc/
