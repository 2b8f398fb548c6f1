"""A site's settings (site.yaml) as plain data: pydantic models with snake_case attributes and the
camelCase keys users write as aliases, relative paths resolved once by their field's type, each
default defined once. They depend on nothing but pydantic and the fleet language's scalar types
(as python-tuf's UpdaterConfig and kopf's OperatorSettings do); reading site.yaml from disk is
reconciler.agent.config's."""

from reconciler.settings.address import Address
from reconciler.settings.batch import BatchDirectories
from reconciler.settings.beacon import HeadBeacon
from reconciler.settings.commits import CommitPolicy
from reconciler.settings.evaluation import LABEL, EvaluationData
from reconciler.settings.fetch import AuthConfig, FetchLimits
from reconciler.settings.forge import ForgeConfig
from reconciler.settings.nats import NatsSettings
from reconciler.settings.oci import OciSettings
from reconciler.settings.paths import PathsFrom
from reconciler.settings.site import SiteConfig, TrustIdentity, ValidationLimits

__all__ = ["LABEL", "Address", "AuthConfig", "BatchDirectories", "CommitPolicy", "EvaluationData", "FetchLimits", "ForgeConfig", "HeadBeacon", "NatsSettings", "OciSettings", "PathsFrom",
           "SiteConfig", "TrustIdentity", "ValidationLimits"]
