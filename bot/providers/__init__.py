"""Provider modules, one per API, and the factory that picks one from the settings."""

from __future__ import annotations

from bot.config import ProviderName, Settings
from bot.providers.base import Capabilities, Provider, ProviderCall

__all__ = ["Capabilities", "Provider", "ProviderCall", "build_provider"]


def build_provider(settings: Settings) -> Provider:
    """The provider `IMAGINE_PROVIDER` names (or the first with a key, else the demo); a
    list of them fails over from one to the next (`FailoverProvider`)."""
    names = settings.provider_names
    if len(names) == 1:
        return _one(settings, names[0])
    from bot.providers.failover import FailoverProvider

    return FailoverProvider([_one(settings, name) for name in names])


def _one(settings: Settings, name: ProviderName) -> Provider:
    if name == "nexconn":
        from bot.providers.nexconn import NexconnProvider

        assert settings.nexconn_api_key is not None
        return NexconnProvider(
            settings.nexconn_api_key.get_secret_value(),
            settings.nexconn_base_url,
            mode=settings.nexconn_mode,
            auth_scheme=settings.nexconn_auth_scheme,
        )
    if name == "gmi":
        from bot.providers.gmi import GmiProvider

        assert settings.gmi_api_key is not None
        return GmiProvider(settings.gmi_api_key.get_secret_value(), settings.gmi_base_url)
    if name == "gemini":
        from bot.providers.gemini import GeminiProvider

        assert settings.gemini_api_key is not None
        return GeminiProvider(settings.gemini_api_key.get_secret_value(), settings.gemini_base_url)
    from bot.providers.demo import DemoProvider

    return DemoProvider(latency=settings.demo_latency)
