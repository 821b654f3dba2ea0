"""The intents of the corpus and their templates in every language.

An intent has one or more *frames* (a slot set, e.g. ``play_music`` with a genre
or with a composer); each frame has 3 templates per language. ``{type}`` or
``{type:form}`` marks a slot; everything else is tagged through the language's
POS lexicon. Template 0 is the canonical phrasing used for translations.

Slot glue that depends on the value (articles, prepositions, case) lives in the
slot lexicons, so each template only has to be grammatical around it, e.g.
``"turn on the light {room}"`` + ``"in the|kitchen"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SLOT_RE = re.compile(r"^\{(\w+)(?::(\w+))?\}$")


@dataclass(frozen=True)
class Frame:
    slots: tuple[str, ...]  # slot types, in a fixed (canonical) order
    templates: dict[str, tuple[str, ...]]  # language -> templates


@dataclass(frozen=True)
class Intent:
    name: str
    frames: tuple[Frame, ...]


def _frame(slots: str, **templates: str) -> Frame:
    """Templates per language, one per line."""
    parsed = {
        lang: tuple(line.strip() for line in block.strip().splitlines() if line.strip())
        for lang, block in templates.items()
    }
    return Frame(tuple(slots.split()), parsed)


INTENTS: tuple[Intent, ...] = (
    Intent("set_alarm", (_frame(
        "time",
        en="""set an alarm {time}
              wake me up {time}
              please set my alarm {time}""",
        fr="""programme une alarme {time}
              tu peux me réveiller {time}
              mets un réveil {time}""",
        de="""stell einen wecker {time}
              weck mich {time}
              ich brauche einen wecker {time}""",
        es="""pon una alarma {time}
              despiértame {time}
              quiero una alarma {time}""",
        it="""imposta una sveglia {time}
              svegliami {time}
              metti la sveglia {time}""",
        nl="""zet een wekker {time}
              maak me wakker {time}
              ik wil een wekker {time}""",
        pt="""define um alarme {time}
              quero um despertador {time}
              põe um alarme {time}""",
        cs="""nastav budík {time}
              vzbuď mě {time}
              potřebuju budík {time}""",
    ),)),
    Intent("set_timer", (_frame(
        "duration",
        en="""set a timer {duration}
              start a timer {duration}
              i need a timer {duration}""",
        fr="""mets un minuteur {duration}
              lance un minuteur {duration}
              je veux un minuteur {duration}""",
        de="""stell einen timer {duration}
              starte einen timer {duration}
              ich brauche einen timer {duration}""",
        es="""pon un temporizador {duration}
              activa un temporizador {duration}
              necesito un temporizador {duration}""",
        it="""imposta un timer {duration}
              avvia un timer {duration}
              mi serve un timer {duration}""",
        nl="""zet een timer {duration}
              start een timer {duration}
              ik wil een timer {duration}""",
        pt="""põe um temporizador {duration}
              inicia um temporizador {duration}
              quero um temporizador {duration}""",
        cs="""nastav časovač {duration}
              spusť minutku {duration}
              potřebuju časovač {duration}""",
    ),)),
    Intent("weather_query", (_frame(
        "city day",
        en="""what is the weather like {city:in} {day}
              will it rain {city:in} {day}
              give me the weather forecast {city:in} {day}""",
        fr="""quelle est la météo {city:in} {day}
              il va pleuvoir {city:in} {day}
              quelles sont les prévisions météo {city:in} {day}""",
        de="""wie wird das wetter {day} {city:in}
              regnet es {day} {city:in}
              wie ist die wettervorhersage {day} {city:in}""",
        es="""qué/DET tiempo hará {city:in} {day}
              va a llover {city:in} {day}
              dime el pronóstico del tiempo {city:in} {day}""",
        it="""che tempo farà {city:in} {day}
              pioverà {city:in} {day}
              dimmi le previsioni del tempo {city:in} {day}""",
        nl="""wat/DET voor/ADP weer wordt het/PRON {day} {city:in}
              gaat het/PRON {day} regenen {city:in}
              hoe is het weer {day} {city:in}""",
        pt="""como vai estar o tempo {city:in} {day}
              vai chover {city:in} {day}
              qual é a previsão do tempo {city:in} {day}""",
        cs="""jaké bude počasí {city:in} {day}
              bude {day} pršet {city:in}
              řekni mi předpověď počasí {city:in} {day}""",
    ),)),
    Intent("play_music", (
        _frame(
            "genre",
            en="""please play {genre}
                  put on {genre}
                  i want to/PART listen to {genre}""",
            fr="""mets {genre}
                  joue {genre}
                  je veux écouter {genre}""",
            de="""spiel bitte {genre}
                  ich möchte {genre} hören
                  mach {genre} an""",
            es="""pon un poco de {genre}
                  quiero escuchar {genre}
                  reproduce {genre}""",
            it="""metti un po' di {genre}
                  voglio ascoltare {genre}
                  suona {genre}""",
            nl="""speel wat/DET {genre}
                  ik wil naar {genre} luisteren
                  zet {genre} op""",
            pt="""põe {genre} por favor
                  toca {genre}
                  quero ouvir {genre}""",
            cs="""pusť mi {genre}
                  zahraj mi {genre}
                  chci poslouchat {genre}""",
        ),
        _frame(
            "artist",
            en="""play something {artist}
                  put on some music {artist}
                  i would like/VERB to/PART hear something {artist}""",
            fr="""joue quelque chose {artist}
                  mets de la musique {artist}
                  je voudrais écouter quelque chose {artist}""",
            de="""spiel etwas {artist}
                  spiel musik {artist}
                  ich möchte etwas {artist} hören""",
            es="""pon algo {artist}
                  pon música {artist}
                  quiero escuchar algo {artist}""",
            it="""metti qualcosa {artist}
                  suona musica {artist}
                  vorrei ascoltare qualcosa {artist}""",
            nl="""speel iets {artist}
                  zet muziek {artist} op
                  ik wil iets {artist} horen""",
            pt="""põe algo {artist}
                  toca música {artist}
                  quero ouvir algo {artist}""",
            cs="""pusť něco {artist}
                  zahraj něco {artist}
                  chci slyšet něco {artist}""",
        ),
    )),
    Intent("call_contact", (_frame(
        "person",
        en="""please call {person}
              phone {person} for me
              can you call {person} for me""",
        fr="""appelle {person} s' il te plaît
              téléphone {person:to}
              tu peux appeler {person}""",
        de="""ruf bitte {person} an
              kannst du {person} anrufen
              ich möchte {person} anrufen""",
        es="""llama a {person} por favor
              quiero llamar a {person}
              puedes llamar a {person}""",
        it="""chiama {person} per favore
              puoi chiamare {person}
              puoi telefonare {person:to}""",
        nl="""bel {person} even
              wil je {person} bellen
              bel {person} alsjeblieft""",
        pt="""liga {person:to} por favor
              telefona {person:to}
              podes ligar {person:to}""",
        cs="""zavolej {person}
              prosím zavolej {person}
              můžeš zavolat {person}""",
    ),)),
    Intent("send_message", (_frame(
        "person",
        en="""send a message {person:to}
              send a text message {person:to}
              write a message {person:to}""",
        fr="""envoie un message {person:to}
              écris un message {person:to}
              envoie un texto {person:to}""",
        de="""schick eine nachricht {person:to}
              schreib {person} eine nachricht
              sende eine nachricht {person:to}""",
        es="""envía un mensaje {person:to}
              manda un mensaje {person:to}
              escribe un mensaje {person:to}""",
        it="""manda un messaggio {person:to}
              invia un messaggio {person:to}
              scrivi un messaggio {person:to}""",
        nl="""stuur een bericht {person:to}
              stuur {person} een bericht
              stuur een berichtje {person:to}""",
        pt="""manda uma mensagem {person:to}
              envia uma mensagem {person:to}
              escreve uma mensagem {person:to}""",
        cs="""pošli zprávu {person}
              napiš zprávu {person}
              pošli esemesku {person}""",
    ),)),
    Intent("turn_on_light", (_frame(
        "room",
        en="""turn on the light {room}
              switch on the lights {room}
              please turn the light on {room}""",
        fr="""allume la lumière {room}
              allume les lumières {room}
              tu peux allumer la lumière {room}""",
        de="""mach das licht {room} an
              schalte das licht {room} ein/ADP
              bitte mach {room} das licht an""",
        es="""enciende la luz {room}
              enciende las luces {room}
              puedes encender la luz {room}""",
        it="""accendi la luce {room}
              accendi le luci {room}
              puoi accendere la luce {room}""",
        nl="""doe het licht aan {room}
              zet het licht {room} aan
              kun je het licht {room} aandoen""",
        pt="""acende a luz {room}
              liga a luz {room}
              podes acender a luz {room}""",
        cs="""rozsviť světlo {room}
              zapni světlo {room}
              můžeš rozsvítit {room}""",
    ),)),
    Intent("turn_off_light", (_frame(
        "room",
        en="""turn off the light {room}
              switch off the lights {room}
              please turn the light off {room}""",
        fr="""éteins la lumière {room}
              éteins les lumières {room}
              tu peux éteindre la lumière {room}""",
        de="""mach das licht {room} aus
              schalte das licht {room} aus
              bitte mach {room} das licht aus""",
        es="""apaga la luz {room}
              apaga las luces {room}
              puedes apagar la luz {room}""",
        it="""spegni la luce {room}
              spegni le luci {room}
              puoi spegnere la luce {room}""",
        nl="""doe het licht uit {room}
              zet het licht {room} uit
              kun je het licht {room} uitdoen""",
        pt="""apaga a luz {room}
              desliga a luz {room}
              podes apagar a luz {room}""",
        cs="""zhasni světlo {room}
              vypni světlo {room}
              můžeš zhasnout {room}""",
    ),)),
    Intent("order_food", (_frame(
        "food",
        en="""please order {food}
              i would like/VERB to/PART order {food}
              can you order {food} for me""",
        fr="""commande {food} s' il te plaît
              je voudrais commander {food}
              tu peux commander {food}""",
        de="""bestell bitte {food}
              ich möchte {food} bestellen
              kannst du {food} bestellen""",
        es="""pide {food} por favor
              quiero pedir {food}
              puedes pedir {food}""",
        it="""ordina {food} per favore
              vorrei ordinare {food}
              puoi ordinare {food}""",
        nl="""bestel {food} voor mij
              ik wil {food} bestellen
              kun je {food} bestellen""",
        pt="""pede {food} por favor
              quero encomendar {food}
              podes pedir {food}""",
        cs="""objednej mi {food}
              chci si objednat {food}
              můžeš objednat {food}""",
    ),)),
    Intent("book_taxi", (_frame(
        "place time",
        en="""book a taxi {place} {time}
              i need a taxi {place} {time}
              get me a taxi {place} {time}""",
        fr="""réserve un taxi {place} {time}
              commande un taxi {place} {time}
              j' ai besoin d' un taxi {place} {time}""",
        de="""bestell ein taxi {place} {time}
              ich brauche {time} ein taxi {place}
              ruf mir ein taxi {place} {time}""",
        es="""pide un taxi {place} {time}
              necesito un taxi {place} {time}
              reserva un taxi {place} {time}""",
        it="""chiamami un taxi {place} {time}
              prenota un taxi {place} {time}
              mi serve un taxi {place} {time}""",
        nl="""bestel een taxi {place} {time}
              ik heb {time} een taxi nodig {place}
              regel een taxi {place} {time}""",
        pt="""chama um táxi {place} {time}
              preciso de um táxi {place} {time}
              reserva um táxi {place} {time}""",
        cs="""objednej taxi {place} {time}
              potřebuju taxi {place} {time}
              zavolej mi taxi {place} {time}""",
    ),)),
    Intent("check_calendar", (_frame(
        "day time",
        en="""do i have a meeting {day} {time}
              am i free {day} {time}
              what is in my calendar {day} {time}""",
        fr="""j' ai une réunion {day} {time}
              je suis libre {day} {time}
              regarde mon agenda {day} {time}""",
        de="""habe ich {day} {time} einen termin
              bin ich {day} {time} frei
              was steht {day} {time} in meinem kalender""",
        es="""tengo alguna reunión {day} {time}
              estoy libre {day} {time}
              qué tengo en mi agenda {day} {time}""",
        it="""ho una riunione {day} {time}
              ho impegni {day} {time}
              cosa c' è nella mia agenda {day} {time}""",
        nl="""heb ik {day} {time} een afspraak
              ben ik {day} {time} vrij
              wat staat er {day} {time} in mijn agenda""",
        pt="""tenho alguma reunião {day} {time}
              estou livre {day} {time}
              o/PRON que tenho na agenda {day} {time}""",
        cs="""mám {day} {time} nějakou schůzku
              mám {day} {time} volno
              co mám v kalendáři {day} {time}""",
    ),)),
    Intent("buy_ticket", (_frame(
        "city day",
        en="""buy a train ticket {city:to} {day}
              i need a ticket {city:to} {day}
              book me a train {city:to} {day}""",
        fr="""achète un billet de train {city:to} {day}
              je voudrais un billet {city:to} {day}
              réserve un train {city:to} {day}""",
        de="""kauf ein zugticket {city:to} {day}
              ich brauche eine fahrkarte {city:to} {day}
              buch mir eine zugfahrt {city:to} {day}""",
        es="""compra un billete de tren {city:to} {day}
              necesito un billete {city:to} {day}
              reserva un tren {city:to} {day}""",
        it="""compra un biglietto del treno {city:to} {day}
              mi serve un biglietto {city:to} {day}
              prenota un treno {city:to} {day}""",
        nl="""koop een treinkaartje {city:to} {day}
              ik wil een kaartje {city:to} {day}
              boek een trein {city:to} {day}""",
        pt="""compra um bilhete de comboio {city:to} {day}
              preciso de um bilhete {city:to} {day}
              reserva um comboio {city:to} {day}""",
        cs="""kup mi jízdenku {city:to} {day}
              potřebuju lístek {city:to} {day}
              zarezervuj mi vlak {city:to} {day}""",
    ),)),
    Intent("book_table", (_frame(
        "party_size day time",
        en="""book a table {party_size} {day} {time}
              reserve a table {party_size} {day} {time}
              i need a table {party_size} {day} {time}""",
        fr="""réserve une table {party_size} {day} {time}
              je voudrais une table {party_size} {day} {time}
              il me faut une table {party_size} {day} {time}""",
        de="""reservier einen tisch {party_size} {day} {time}
              ich brauche einen tisch {party_size} {day} {time}
              buch einen tisch {party_size} {day} {time}""",
        es="""reserva una mesa {party_size} {day} {time}
              quiero una mesa {party_size} {day} {time}
              necesito una mesa {party_size} {day} {time}""",
        it="""prenota un tavolo {party_size} {day} {time}
              vorrei un tavolo {party_size} {day} {time}
              mi serve un tavolo {party_size} {day} {time}""",
        nl="""reserveer een tafel {party_size} {day} {time}
              ik wil een tafel {party_size} {day} {time}
              boek een tafel {party_size} {day} {time}""",
        pt="""reserva uma mesa {party_size} {day} {time}
              quero uma mesa {party_size} {day} {time}
              preciso de uma mesa {party_size} {day} {time}""",
        cs="""zarezervuj stůl {party_size} {day} {time}
              chci stůl {party_size} {day} {time}
              potřebuju stůl {party_size} {day} {time}""",
    ),)),
)
