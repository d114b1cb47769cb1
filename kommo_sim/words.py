"""The vocabulary the seed and the random changes draw names from."""

from __future__ import annotations

TAG_PALETTE = ("DDEBB5", "EBEBEB", "D0D0D0", "F2DDF7", "247BA0", "FFC8C8", "C6E2FF", None)
TAG_WORDS = (
    "website",
    "repeat client",
    "whatsapp",
    "facebook",
    "instagram",
    "vip",
    "referral",
    "lima",
    "arequipa",
    "promo",
    "cold",
    "hot",
    "wholesale",
    "retail",
    "b2b",
    "callback",
)
FIRST_NAMES = (
    "Jane",
    "John",
    "María",
    "José",
    "Lucía",
    "Carlos",
    "Ana",
    "Luis",
    "Rosa",
    "Jorge",
    "Sofía",
    "Miguel",
    "Valeria",
    "Diego",
    "Camila",
    "Andrés",
    "Elena",
    "Pedro",
)
LAST_NAMES = (
    "Doe",
    "Quispe",
    "Flores",
    "Rodríguez",
    "García",
    "Mamani",
    "Huamán",
    "Torres",
    "Chávez",
    "Ramírez",
    "Smith",
    "Vargas",
    "Castillo",
    "Rojas",
    "Mendoza",
)
PRODUCTS = ("Website request", "Order", "Quote", "Consultation", "apple tv", "Renewal", "Demo")
COMPANY_WORDS = ("Acme", "Andes", "Inca", "Pacífico", "Sol", "Condor", "Nazca", "Titicaca")
COMPANY_SUFFIXES = ("Inc", "S.A.C.", "Trading", "Group", "& Hijos", "Logistics")
STATUS_NAMES = ("Initial contact", "Negotiation", "Decision making", "Contract", "Invoice")
STATUS_COLORS = ("#99ccff", "#ffcc66", "#ffff99", "#ccff66", "#deff81", "#87f2c0")
LOSS_REASONS = ("Too expensive", "Chose a competitor", "No answer")
INCOMING_SOURCES = ("Website form #1548921297", "Landing page form", "Call from +51 1 700 1000")
